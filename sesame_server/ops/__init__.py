"""Operating the server: logs, metrics, memory, startup advice and the login service.

One job per module:

- `logs`: logging setup and teardown, the JSON and human formatters.
- `request_log`: the one structured line per HTTP request (middleware for an app or a
  blueprint), handed with its job to observers such as metrics.
- `metrics`: the Prometheus registry of an app and what feeds it; `collectors`: the
  gauges computed at scrape time from the engine's published status and from `memory`.
- `memory`: the one memory probe (psutil; bytes everywhere).
- `load_errors`: what kind of failure a download/load error is (shared with the hub
  downloader); `advice`: the messages that tell the operator what to do about it.
- `service_units`: the launchd plist / systemd unit (pure renderers); `service_manager`:
  `sesame-tts service` and every launchctl/systemctl call; `health_check`: waiting on
  /health; `log_viewer`: `sesame-tts service logs`.

Nothing here imports the API layer: routes that serve these (GET /metrics, /health) live
in `api/`.
"""
