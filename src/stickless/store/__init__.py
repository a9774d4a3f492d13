"""The Redis side: key layout, Lua scripts, the sans-IO plan and its sync / async executors."""
