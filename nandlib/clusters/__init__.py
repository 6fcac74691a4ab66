"""Example cluster files for ``nand sweep --cluster FILE`` (:mod:`nandlib.cluster`); copy one and edit it.
Book: ``reproducing.md``, "Running on a cluster"."""
