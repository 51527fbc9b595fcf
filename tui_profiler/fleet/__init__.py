"""The fleet: one session across several test boxes, through the Docker engines already on them.

No agent of ours runs on any box and nothing here is a transport of its own: each host is a Docker engine
reached the way Docker reaches it (`unix://`, `tcp://` with TLS, `ssh://`, a `docker context`).
- `hosts`: resolve a host's URL or context to an engine client; what each engine can enforce.
- `transfer`: send an image a host lacks (`docker save` -> `load`, or through a registry), timed.
- `image`: the measuring image (tui-profiler itself, no model) that runs next to each remote target.
- `remote`: one container group on a remote host: its target, its measuring container in the
  target's network namespace, the events streamed back as JSON lines.
The schedule that spreads container groups over hosts lives in `tui_profiler.sweep`; the in-container
side of a group is `tui_profiler.sweep.measure`.
"""
