"""Reproducing the paper and learning a taste: AVA, metrics, probe training, fine-tuning."""
