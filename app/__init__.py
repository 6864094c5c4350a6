"""FetalIQA desktop application (PySide6 + pyqtgraph views over fetaliqa_core)."""
