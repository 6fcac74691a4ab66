"""Training the detectors' trainable parts (APRIL-GAN's linear layers). Book: ``method.md``, "APRIL-GAN"."""
