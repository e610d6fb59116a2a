"""``adapter alerts test``: one test alert to every configured channel (webhooks, email)."""

from __future__ import annotations

import sys

import typer

from adapter.config import DEFAULT_CONFIG, ConfigError, load_config
from adapter.ops.cli_common import ConfigOption



def register(app: typer.Typer) -> None:
    alerts_app = typer.Typer(help="Alerts on state changes (webhook, email).", no_args_is_help=True)
    app.add_typer(alerts_app, name="alerts")

    @alerts_app.command("test")
    def alerts_test(config: ConfigOption = DEFAULT_CONFIG) -> None:
        """Send a test alert to every channel in the alerts section. Exit 0 when all got it, 1 when one
        failed (each failure printed), 2 on a configuration problem or when no channel is configured."""
        from adapter.ops.alerts.notify import build_notifiers
        from adapter.ops.alerts.service import AlertService
        from adapter.ops.logs import install_redaction

        install_redaction()
        try:
            cfg = load_config(config)
            notifiers = build_notifiers(cfg)
        except ConfigError as exc:
            sys.stderr.write("configuration problem (nothing was sent):\n" + "\n".join(f"  {l}" for l in exc.lines) + "\n")
            raise typer.Exit(2) from None
        if not notifiers:
            sys.stderr.write(f"{config}: alerts: no channel configured -- fix: add alerts.webhooks or alerts.email\n")
            raise typer.Exit(2)
        service = AlertService(lambda now: None, None, notifiers, cfg.alerts.rules,  # type: ignore[arg-type,return-value]  # test() uses neither
                               cfg.alerts.renotify_s, cfg.instance)
        try:
            deliveries = service.test()
        finally:
            service.close()
        labels = {n.channel: n.label for n in notifiers}
        for delivery in deliveries:
            verdict = "sent" if delivery.ok else f"FAILED: {delivery.error}"
            sys.stdout.write(f"{labels[delivery.channel]}: {verdict}\n")
        raise typer.Exit(0 if all(d.ok for d in deliveries) else 1)
