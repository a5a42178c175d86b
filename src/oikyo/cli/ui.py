"""`oikyo ui`: the platform server (the web dashboard and the REST API under /api/v1) on this machine."""

from __future__ import annotations

import typer

from oikyo.cli.console import err, out

DEFAULT_PORT = 8420
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def ui(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. The default serves this machine only; "
                                                          "anything else exposes the server to the network (a warning is printed)."),
    port: int = typer.Option(DEFAULT_PORT, "--port", "-p", help="Port to listen on."),
    new_token: bool = typer.Option(False, "--new-token", help="Replace the login token (logs every browser out)."),
    max_upload_mb: int = typer.Option(1024, "--max-upload-mb", min=1, help="Largest dataset upload accepted, in MiB (larger ones get 413)."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn's log level: critical, error, warning, info, debug."),
    no_loop: bool = typer.Option(False, "--no-loop", help="Do not run the continuous-training controller beside the "
                                                          "server (also OIKYO_LOOP=0); `oikyo loop run` runs one alone."),
) -> None:
    """Start the platform server: the web dashboard and the REST API (/api/v1, OpenAPI spec at /api/v1/openapi.json).

    Prints the URL and the login token. The token is kept in the workspace file ui-token (mode 0600),
    so it survives restarts; browsers log in with it once, scripts send 'Authorization: Bearer TOKEN'.
    Every route but /api/v1/health, /api/v1/login and the login page needs it.
    The continuous-training controller (`oikyo loop`) runs beside it unless --no-loop or OIKYO_LOOP=0.
    """
    import uvicorn

    from oikyo.api.app import create_app
    from oikyo.api.auth import load_or_create_token, token_path
    from oikyo.api.background import loop_wanted

    token = load_or_create_token(new=new_token)
    app = create_app(token, max_upload_bytes=max_upload_mb << 20, loop=loop_wanted(not no_loop))
    shown = f"[{host}]" if ":" in host else host
    if host not in LOCAL_HOSTS:
        err.print(f"[bold yellow]warning:[/] listening on {host}, not 127.0.0.1: anyone who can reach this "
                  "machine can reach the server (the token still guards it, but traffic is plain HTTP).")
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else shown)
    url = f"http://{shown}:{port}"
    out.print(f"oikyo platform server: [bold]{url}/[/]", soft_wrap=True)
    out.print(f"Login token: [bold]{token}[/]   (kept in {token_path()})", soft_wrap=True)
    # The token rides in the fragment, which browsers never send to the server (nor put in its logs).
    out.print(f"Open {url}/login and enter the token (or open {url}/login#token={token} to have it filled in).",
              soft_wrap=True)
    out.print(f"REST API: {url}/api/v1 (docs at {url}/api/v1/docs); send 'Authorization: Bearer <token>'.",
              soft_wrap=True)
    if not app.state.loop:
        out.print("The loop controller is off (--no-loop or OIKYO_LOOP=0): applied loop policies wait for "
                  "`oikyo loop run`.", soft_wrap=True)
    out.print("Stop with Ctrl+C.")
    uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=False, server_header=False)
