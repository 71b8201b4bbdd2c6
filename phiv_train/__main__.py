"""``python -m phiv_train`` (what torchrun and the deepspeed launcher run): same as ``phiv-train``."""

from phiv_train.cli import main

if __name__ == "__main__":
    main()
