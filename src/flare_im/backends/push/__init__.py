"""The push provider port (DESIGN.md §5, §9): one adapter per provider Flare speaks (APNs, FCM HTTP v1, Web Push)
and a signed webhook for the rest. ``base.py`` declares the port; ``build.py`` builds the configured adapters
from settings and says which are disabled and why.
"""
