"""``python -m mri2mri.train``: the `mri2mri-train` command (handy under torchrun)."""

from mri2mri.train.cli_train import main

if __name__ == "__main__":  # not when a worker process imports the main module
    main()
