"""Default values that the command-line help shows, in a module free of heavy imports, so that
`hat-basicsr <command> --help` can show them without loading torch (hat_basicsr/cli/__init__.py)."""

# Context (in LR pixels) each tile reads beyond its core when `tile_pad` is not given: on the demo
# data it keeps tiled PSNR within the limit of whole-image inference (the measurements are in the
# README, "Tiled inference"), and 16 is a multiple of the released window sizes (8, 16), which
# keeps tiles on the window grid.
DEFAULT_TILE_PAD = 16
# Images larger than this are refused before decoding (upscale's --max-pixels); OpenCV cannot decode
# more than 2**30 pixels in any case.
DEFAULT_MAX_PIXELS = 100_000_000
# LAM: sigma_max of the blur path, in input pixels (the LAM authors' demo setting), path-integration
# steps, and the side of the target patch in SR pixels.
DEFAULT_SIGMA = 1.2
DEFAULT_STEPS = 50
DEFAULT_BOX_SIZE = 16
