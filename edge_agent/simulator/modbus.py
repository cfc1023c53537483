"""Modbus TCP frontend of the simulator (pymodbus server on the device's host:port).

The server's register image is filled from the simulation on each request (pymodbus'
SimDevice `action` hook), so every read sees the machine as it is at that instant.
`requests` counts read requests, which tests compare with the read planner.
"""

from __future__ import annotations

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus.address import ModbusAddress, encode, parse

_SPAN = 65536
_FC_TABLE = {1: "coil", 2: "di", 3: "hr", 4: "ir"}


class ModbusFrontend:
    def __init__(self, device, tags, sim):
        self.device, self.tags, self.sim = device, list(tags), sim
        self.addresses: dict[str, ModbusAddress] = {t.name: parse(t.address, t.type) for t in self.tags}
        self.requests = 0
        self.invalid: set[tuple[str, int]] = set()  # registers (table, number) answering "illegal address"
        self._server: ModbusTcpServer | None = None

    def image(self) -> dict[str, dict[int, int | bool]]:
        """table -> {number: register or bit} for the current simulated values."""
        out: dict[str, dict[int, int | bool]] = {"hr": {}, "ir": {}, "coil": {}, "di": {}}
        values = self.sim.tag_values(self.tags)
        for tag in self.tags:
            addr, value = self.addresses[tag.name], values[tag.name]
            if addr.data_type == "bool":
                out[addr.table][addr.number] = bool(value)
            else:
                if addr.data_type.startswith("float"):
                    value = float(value)
                else:
                    value = int(value) % (2 ** (16 * addr.width))
                    if addr.data_type.startswith("int") and value >= 2 ** (16 * addr.width - 1):
                        value -= 2 ** (16 * addr.width)
                for i, reg in enumerate(encode(value, addr.data_type, self.device.byte_order)):
                    out[addr.table][addr.number + i] = reg
        return out

    async def _action(self, fc, start_address, address, count, registers, set_values):
        table = _FC_TABLE.get(fc)
        if table is None or set_values is not None:
            return None
        self.requests += 1
        image = self.image()[table]
        if table in ("coil", "di"):  # bit blocks: each register packs 16 bits, bit 0 first
            for reg in range(address // 16, address // 16 + count):
                word = 0
                for b in range(16):
                    if image.get(reg * 16 + b):
                        word |= 1 << b
                registers[reg - start_address] = word
            return None
        for number in range(address, address + count):
            if (table, number) in self.invalid:
                return ExcCodes.ILLEGAL_ADDRESS
            registers[number - start_address] = image.get(number, 0)
        return None

    async def start(self) -> None:
        blocks = (
            [SimData(0, values=[False] * _SPAN, datatype=DataType.BITS)],
            [SimData(0, values=[False] * _SPAN, datatype=DataType.BITS)],
            [SimData(0, values=[0] * _SPAN, datatype=DataType.REGISTERS)],
            [SimData(0, values=[0] * _SPAN, datatype=DataType.REGISTERS)],
        )
        device = SimDevice(id=0, simdata=blocks, action=self._action)
        self._server = ModbusTcpServer(device, address=(self.device.host, self.device.port))
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
