#!/usr/bin/env bash
# Seed the decoder fuzzer's corpus with the golden vectors (one valid frame
# per message kind), so it starts from valid frames instead of random bytes.
# Run: bash seed-corpus.sh && cargo +nightly fuzz run decoder
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/decoder
for f in ../tests/golden/*.hex; do
    # First byte: the split point the target uses; 0 = whole frame at once.
    { printf '\x00'; perl -ne 'chomp; print pack("H*", $_)' "$f"; } > "corpus/decoder/$(basename "$f" .hex)"
done
ls corpus/decoder | wc -l
