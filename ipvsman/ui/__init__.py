"""The urwid dashboard: a controller (app.py) that owns the loop, views, one keymap and a palette."""
