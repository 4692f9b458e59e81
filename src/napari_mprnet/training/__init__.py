"""Fine-tuning: the paper's losses, paired data and the trainer."""
