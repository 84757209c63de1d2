#!/usr/bin/env bash
# Makes sure what RocksDB's build needs is on this machine: a C++ compiler and libclang
# (bindgen loads it to generate RocksDB's bindings). Installs them with apt-get when it
# can (root, or sudo without a password); otherwise says exactly what to install.
set -euo pipefail

have_libclang() {
  [ -n "${LIBCLANG_PATH:-}" ] && return 0
  ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' && return 0
  compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null && compgen -G '/usr/lib/llvm-*/lib/clang/*/include/stddef.h' >/dev/null
}

have_cxx() { command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found. Install Rust first: https://rustup.rs" >&2
  exit 1
fi

missing=()
have_libclang || missing+=(libclang-dev)
have_cxx || missing+=(g++)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "RocksDB's build needs: ${missing[*]} (not found); installing with apt-get..." >&2
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo"
else
  echo "error: cannot install as a regular user. Run:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: no apt-get here. Install libclang (the LLVM C API library with its headers) and a C++ compiler, then rerun." >&2
  exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
have_libclang || { echo "error: libclang still not found after installing ${missing[*]}; set LIBCLANG_PATH to the directory holding libclang.so" >&2; exit 1; }
