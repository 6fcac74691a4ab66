"""WinCLIP / WinCLIP+ detector (book: ``protocol.md``, "WinCLIP")."""

from nandlib.detectors.winclip.detector import WinCLIP

__all__ = ["WinCLIP"]
