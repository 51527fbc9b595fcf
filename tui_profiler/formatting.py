"""How both front ends (the TUI and the headless progress) show numbers: durations, latencies, sizes, rates."""
