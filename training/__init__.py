"""Training and evaluation of FetalIQA's models (uses fetaliqa_core's models and preprocessing,
so a trained bundle loads unchanged in the app)."""
