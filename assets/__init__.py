# Data files shipped with clipcull; installed as the package `clip_cull.assets`.
