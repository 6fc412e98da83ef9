"""The bottom layer: errors and exit codes, paths and the environment, the training settings'
schema, run directories and atomic files, the device, ranks and this host. Imports nothing of the
app above it; torch only inside the functions that need it."""
