"""The chaos campaign: real daemons under kills, fuzzed bytes, floods and the largest images
(``python -m service.chaos``; docs/service.md, "Chaos")."""
