"""BIDS: file names, entities, URIs and dataset descriptions (`names`, the one module
that knows how BIDS files are named), and BIDS-App input discovery (`inputs`)."""
