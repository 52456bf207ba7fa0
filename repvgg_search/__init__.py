"""RepVGG architecture search and ablation harness."""
