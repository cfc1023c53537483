"""`edge-agent order set|clear` and `edge-agent downtime classify`: what the MES sends, from a shell.

The CLI publishes the same command a MES would, to `<root>/cmd/<command>` on the
agent's own broker (same TLS and credentials as the agent), so there is one path
for commands and the running agent answers with the events it causes.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from edge_agent.config import Config

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="YAML config file")]
MachineOption = Annotated[str | None, typer.Option("--machine", "-m", help="machine id (default: the only one)")]

order_app = typer.Typer(help="Set the production order a machine works on (BDE).", no_args_is_help=True)
downtime_app = typer.Typer(help="Classify downtimes.", no_args_is_help=True)


def _machine(cfg: Config, machine: str | None) -> str:
    ids = [m.id for m in cfg.machines]
    if machine is None:
        if len(ids) == 1:
            return ids[0]
        raise typer.BadParameter(f"the config has several machines: name one with --machine ({', '.join(ids)})")
    if machine not in ids:
        raise typer.BadParameter(f"no machine {machine!r} in the config ({', '.join(ids)})")
    return machine


async def publish_command(cfg: Config, machine: str, command: dict[str, Any]) -> str:
    """Publish one command with QoS 1 and wait for the broker's PUBACK; returns the topic."""
    import aiomqtt

    from edge_agent.forwarding.mqtt import tls_context

    out = cfg.outputs.mqtt
    if out is None:
        raise typer.BadParameter("the config has no MQTT output: commands travel over the agent's broker")
    topic = f"{cfg.topic_root(machine)}/cmd/{command['command']}"
    tls = await asyncio.to_thread(tls_context, out.effective_tls, purpose="command")
    async with aiomqtt.Client(
        out.host, out.effective_port, identifier=f"{out.client_id or 'edge-agent'}-cli-{os.getpid()}",
        username=out.username, password=out.password.get_secret_value() if out.password else None,
        timeout=out.timeout, tls_context=tls,
        protocol=aiomqtt.ProtocolVersion.V5 if out.protocol == "5" else None,
    ) as client:
        await client.publish(topic, json.dumps(command).encode(), qos=1, timeout=out.timeout)
    return topic


def _send(config: Path, machine: str | None, command: dict[str, Any]) -> None:
    import aiomqtt

    from edge_agent.cli_app import _load

    cfg = _load(config)
    target = _machine(cfg, machine)
    try:
        topic = asyncio.run(publish_command(cfg, target, command))
    except (aiomqtt.MqttError, OSError) as e:
        typer.echo(f"edge-agent: cannot reach the broker {cfg.outputs.mqtt.host}: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"sent to {topic}: {json.dumps(command)}")


@order_app.command("set")
def order_set(
    order: Annotated[str, typer.Argument(help="production order number")],
    config: ConfigOption,
    machine: MachineOption = None,
    article: Annotated[str | None, typer.Option(help="article / material number")] = None,
    operation: Annotated[str | None, typer.Option(help="operation (routing step), e.g. 0010")] = None,
    ideal_cycle_time: Annotated[float | None, typer.Option(min=0.001, help="seconds per part for this order")] = None,
    target_quantity: Annotated[int | None, typer.Option(min=1, help="parts to make")] = None,
) -> None:
    """Start (or update) the order a machine works on; the previous order's summary follows."""
    _send(config, machine, {"command": "set_order", "order": order, "article": article, "operation": operation,
                            "ideal_cycle_time": ideal_cycle_time, "target_quantity": target_quantity})


@order_app.command("clear")
def order_clear(config: ConfigOption, machine: MachineOption = None) -> None:
    """The machine works on no order from now on (the running order's summary follows)."""
    _send(config, machine, {"command": "set_order", "order": None})


@downtime_app.command("classify")
def downtime_classify(
    config: ConfigOption,
    machine: MachineOption = None,
    downtime_id: Annotated[str | None, typer.Option(help="downtime_id from a downtime event")] = None,
    event_id: Annotated[str | None, typer.Option(help="event_id of a downtime event")] = None,
    reason: Annotated[str | None, typer.Option(help="reason as text")] = None,
    reason_code: Annotated[int | None, typer.Option(help="reason code from the machine's catalogue")] = None,
) -> None:
    """Set the reason of an open or past downtime; the agent answers with a downtime_update event."""
    if (downtime_id is None) == (event_id is None):
        raise typer.BadParameter("name the downtime with exactly one of --downtime-id or --event-id")
    if (reason is None) == (reason_code is None):
        raise typer.BadParameter("give exactly one of --reason or --reason-code")
    command: dict[str, Any] = {"command": "set_downtime_reason"}
    command.update({k: v for k, v in (("downtime_id", downtime_id), ("event_id", event_id), ("reason", reason),
                                      ("reason_code", reason_code)) if v is not None})
    _send(config, machine, command)


def register(app: typer.Typer) -> None:
    app.add_typer(order_app, name="order")
    app.add_typer(downtime_app, name="downtime")
