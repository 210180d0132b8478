"""labeler: an auto-labeling pipeline for autonomous-driving road-test logs.

See README.md for the two set-up commands and docs/ for conventions and architecture.
"""

__version__ = "0.1.0"
