"""The daemon: wiring, life-cycle manager, scheduler and monitor loops, recovery."""
