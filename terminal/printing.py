"""Receipts on paper (an adapter over python-escpos).

The printer is named in the terminal's settings (``printer``):

- ``usb:VID:PID`` (hex, e.g. ``usb:04b8:0202``), a USB receipt printer;
- ``network:HOST[:PORT]`` (port 9100 by default), a printer on the shop's network;
- ``file:PATH`` (e.g. ``file:/dev/usb/lp0``), a device or file that takes ESC/POS.

Text goes out in the printer's Chinese code page (GB18030) where the line needs it;
the verification code is printed as text and as a native QR code (``GS ( k``).
"""

from __future__ import annotations

import unicodedata
from typing import Any

from pact.receipt import Receipt
from pact.text import N_
from terminal.errors import ConfigError, PrinterError

WIDTH = 42  # characters on an 80 mm slip (font A)


def open_printer(spec: str) -> Any:
    """The ESC/POS printer the settings name: ConfigError for a spec that is not one,
    PrinterError when the printer cannot be opened."""
    # imported here, when a printer is opened: python-escpos (and what it imports) is
    # a third of the CPU a `unioncard sync` started by the daemon took, for nothing
    from escpos import printer as escpos

    kind, _, rest = spec.partition(":")
    make: Any = None
    try:
        if kind == "usb":
            vendor, product = (int(part, 16) for part in rest.split(":"))
            make = lambda: escpos.Usb(vendor, product)  # noqa: E731
        elif kind == "network" and rest.partition(":")[0]:
            host, _, port = rest.partition(":")
            number = int(port or 9100)
            make = lambda: escpos.Network(host, number)  # noqa: E731
        elif kind == "file" and rest:
            make = lambda: escpos.File(rest)  # noqa: E731
    except ValueError:
        make = None
    if make is None:
        raise ConfigError(
            N_(
                "printer %(spec)s is not usb:VID:PID, network:HOST[:PORT] or file:PATH: "
                "check the settings"
            ),
            spec=repr(spec),
        )
    try:
        return make()
    except Exception as exc:  # python-escpos raises its own kinds (USB, socket, OS)
        raise PrinterError(
            N_("cannot open the printer %(spec)s (%(problem)s)"),
            spec=spec,
            problem=type(exc).__name__,
        ) from None


def columns(text: str) -> int:
    """The columns ``text`` takes on the slip: a Chinese character (East Asian wide or
    full-width) takes two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _row(left: str, right: str) -> str:
    space = max(1, WIDTH - columns(left) - columns(right))
    return f"{left}{' ' * space}{right}\n"


def print_receipt(device: Any, slip: Receipt) -> None:
    """Write ``slip`` to an ESC/POS printer (or python-escpos's Dummy) and cut."""
    try:
        device.set(align="center", bold=True, double_height=True)
        device.text(f"{slip.merchant}\n")
        device.set(align="center", bold=False, double_height=False)
        device.text(f"{slip.heading} #{slip.seq}  {slip.terminal_id}\n{slip.local_time}\n")
        device.text(f"{slip.card}  {'会员 member' if slip.member else '非会员 non-member'}\n")
        device.set(align="left")
        device.text("-" * WIDTH + "\n")
        for line in slip.lines:
            device.text(_row(f"{line.sku} x{line.qty} @{line.unit_price}", line.gross))
            if line.discount != "0.00":
                device.text(_row("  优惠 discount", f"-{line.discount}"))
        for title, amount in slip.discounts:
            device.text(_row(f"  {title}", f"-{amount}"))
        device.text("-" * WIDTH + "\n")
        device.text(_row("原价 Gross", slip.gross))
        device.text(_row("优惠 Discount", f"-{slip.discount}"))
        device.set(bold=True)
        device.text(_row(slip.net_label, slip.net))
        device.set(bold=False)
        if slip.note:
            device.text(f"{slip.note}\n")
        if slip.code:
            device.set(align="center")
            device.text(f"\n核验码 Verify: {slip.code}\n")
            device.qr(slip.code, size=6, native=True)
        device.cut()
    except Exception as exc:  # python-escpos and the device raise their own kinds
        raise PrinterError(
            N_("the receipt was not printed (%(problem)s)"),
            problem=" ".join(f"{type(exc).__name__}: {exc}".split()),  # one line, whatever it said
        ) from None
    finally:
        close = getattr(device, "close", None)
        if callable(close):
            try:
                close()  # release the USB interface or the socket for the next slip
            except Exception:  # noqa: BLE001 - a close that fails must not hide the print
                pass
