#!/usr/bin/env bash
# Copies the headers of nlohmann-json and OpenSSL from this machine into .carry/include, which the
# device calls carry: the GPU machine reaches no registry and may lack their -dev packages (CMake
# looks there, see DEEPTHIN_EXTRA_INCLUDE). About 3 MB.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .carry/include
cp -r /usr/include/nlohmann .carry/include/
cp -r /usr/include/openssl .carry/include/
cp /usr/include/"$(gcc -print-multiarch)"/openssl/*.h .carry/include/openssl/
du -sh .carry/include
