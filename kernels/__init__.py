"""kb's own Triton kernels (encoder and generator attention), each beside a torch reference."""
