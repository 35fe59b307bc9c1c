"""Running compiled artifacts on a device other than this process: ARM64
libraries cross-built here (cross.py) and run under qemu-user through a small
C driver (driver.c, runner.py). On a phone the same driver runs over adb."""
