from clip_cull.cli import main

main()
