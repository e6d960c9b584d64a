"""Notebook-specific experiments and widget callbacks (the top floor: may import everything below).

Each module belongs to one notebook; its functions are plain callbacks returning data or a
figure, so pytest can drive them without a browser and the notebook wires them to ipywidgets.
"""
