"""Modbus TCP and RTU frontend of the simulator (pymodbus server).

TCP listens on the device's host:port. RTU serves the serial port named in the
device's `port`: run the simulator with its own config whose port is the other end
of the line (e.g. one end of a `socat` pseudo-terminal pair, or a USB-RS485 adapter
wired to the agent's). Every unit id named by a tag (or the device's `unit`) is served;
a request for any other unit gets no answer (`unanswered` counts them).

The server's register image is filled from the simulation on each request (pymodbus'
SimDevice `action` hook), so every read sees the machine as it is at that instant.
Tests can steer it:
- `requests` counts read requests, to compare with the read planner;
- `invalid` holds registers answering "illegal data address": `(table, number)` on
  every unit or `(unit, table, number)` on one;
- `values[tag name] = value` overrides the simulated value of a tag;
- `raw[(unit, table, number)] = word` (or `(table, number)`) sets a register or bit
  as it goes on the wire, bypassing the codecs, for honest byte-order tests and scans.
"""

from __future__ import annotations

import functools

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus.address import ModbusAddress, encode, parse, string_length

_SPAN = 65536
_FC_TABLE = {1: "coil", 2: "di", 3: "hr", 4: "ir"}


class ModbusFrontend:
    def __init__(self, device, tags, sim):
        self.device, self.tags, self.sim = device, list(tags), sim
        self.addresses: dict[str, ModbusAddress] = {t.name: parse(t.address, t.type, device) for t in self.tags}
        self.requests = 0
        self.unanswered = 0  # requests for a unit this server does not serve (left without answer)
        self._served: set[int] = set()
        self.invalid: set[tuple] = set()  # (table, number) or (unit, table, number) answering "illegal address"
        self.values: dict[str, object] = {}  # tag name -> value overriding the simulation
        self.raw: dict[tuple, int | bool] = {}  # (unit, table, number) or (table, number) -> word/bit on the wire
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    def unit_of(self, name: str) -> int:
        unit = self.addresses[name].unit
        return self.device.unit if unit is None else unit

    @property
    def units(self) -> list[int]:
        return sorted({self.device.unit, *(self.unit_of(t.name) for t in self.tags)})

    def image(self, unit: int | None = None) -> dict[str, dict[int, int | bool]]:
        """table -> {number: register or bit} of one unit (default: the device's) for the current values."""
        unit = self.device.unit if unit is None else unit
        out: dict[str, dict[int, int | bool]] = {"hr": {}, "ir": {}, "coil": {}, "di": {}}
        tags = [t for t in self.tags if self.unit_of(t.name) == unit]
        values = {**self.sim.tag_values(tags), **{k: v for k, v in self.values.items() if k in self.addresses}}
        for tag in tags:
            addr, value = self.addresses[tag.name], values[tag.name]
            table = out[addr.table]
            if addr.table in ("coil", "di"):
                table[addr.number] = bool(value)
            elif addr.bit is not None:
                word = int(table.get(addr.number, 0))
                mask = 1 << addr.bit
                table[addr.number] = (word | mask) if value else (word & ~mask)
            else:
                for i, reg in enumerate(encode(_fit(value, addr), addr.data_type, self.device.byte_order)):
                    table[addr.number + i] = reg
        for key, word in self.raw.items():
            if len(key) == 2 or key[0] == unit:
                t, number = key[-2], key[-1]
                out[t][number] = word
        return out

    def _invalid(self, unit: int, table: str, number: int) -> bool:
        return (table, number) in self.invalid or (unit, table, number) in self.invalid

    async def _action(self, unit, fc, start_address, address, count, registers, set_values):
        table = _FC_TABLE.get(fc)
        if table is None or set_values is not None:
            return None
        self.requests += 1
        image = self.image(unit)[table]
        if table in ("coil", "di"):  # bit blocks: each register packs 16 bits, bit 0 first; count is registers
            # the hook does not see the bit count: an invalid bit fails every read of its group of 16
            for number in range(address // 16 * 16, (address // 16 + count) * 16):
                if self._invalid(unit, table, number):
                    return ExcCodes.ILLEGAL_ADDRESS
            for reg in range(address // 16, address // 16 + count):
                word = 0
                for b in range(16):
                    if image.get(reg * 16 + b):
                        word |= 1 << b
                registers[reg - start_address] = word
            return None
        for number in range(address, address + count):
            if self._invalid(unit, table, number):
                return ExcCodes.ILLEGAL_ADDRESS
            registers[number - start_address] = int(image.get(number, 0))
        return None

    def _drop_unknown_units(self, sending: bool, pdu):
        """A request for a unit nobody serves gets no answer, as on a real RS-485 line.

        (pymodbus' SimDevice store would answer "device failure" instead.)
        """
        if not sending and pdu.dev_id not in self._served:
            self.unanswered += 1
            return None  # the request handler skips a request without a PDU
        return pdu

    def _devices(self) -> list[SimDevice]:
        devices = []
        for unit in self.units:
            blocks = (
                [SimData(0, values=[False] * _SPAN, datatype=DataType.BITS)],
                [SimData(0, values=[False] * _SPAN, datatype=DataType.BITS)],
                [SimData(0, count=_SPAN, values=[0], datatype=DataType.REGISTERS)],  # count=: fast to build
                [SimData(0, count=_SPAN, values=[0], datatype=DataType.REGISTERS)],
            )
            devices.append(SimDevice(id=unit, simdata=blocks, action=functools.partial(self._action, unit)))
        return devices

    async def start(self) -> None:
        d = self.device
        devices = self._devices()
        self._served = set(self.units)
        if d.protocol == "modbus_rtu":
            self._server = ModbusSerialServer(
                devices, framer=FramerType.RTU, port=d.port, baudrate=d.baud_rate, bytesize=d.data_bits,
                parity=d.parity, stopbits=d.stop_bits, trace_pdu=self._drop_unknown_units)
        else:
            self._server = ModbusTcpServer(devices, address=(d.host, d.port), trace_pdu=self._drop_unknown_units)
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None


def _fit(value, addr: ModbusAddress):
    """A simulated value made to fit the tag's type (counters wrap like the PLC's)."""
    if string_length(addr.data_type) is not None:
        return str(value)
    if addr.data_type.startswith("float"):
        return float(value)
    bits = 16 * addr.width
    value = int(value) % (2 ** bits)
    if addr.data_type.startswith("int") and value >= 2 ** (bits - 1):
        value -= 2 ** bits
    return value
