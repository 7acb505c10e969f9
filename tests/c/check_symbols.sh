#!/bin/sh
# The header and the library agree: the functions include/iotconn.h declares are exactly the dynamic symbols
# libiotconn.so exports (nothing else leaks, nothing is missing), the soname is right, and each function's
# return and parameter types match the prototype cgo generated for it (ignoring const, and void* user values that cgo sees
# as uintptr_t).
# usage: check_symbols.sh CC HEADER LIBRARY CGO_HEADER
set -eu
cc=$1 header=$2 lib=$3 cgo_header=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Declared: every "iotconn_name(" left after the preprocessor (no comments, no macros).
"$cc" -E -P "$header" | grep -o 'iotconn_[a-z0-9_]* *(' | sed 's/ *(//' | sort -u >"$tmp/declared"
# Exported: defined dynamic symbols, without their version suffix; the version node itself is type A.
nm -D --defined-only "$lib" | awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }' | sort -u >"$tmp/exported"

status=0
if ! diff -u "$tmp/declared" "$tmp/exported"; then
	echo "FAIL: declared (-) and exported (+) functions differ"
	status=1
fi
[ "$(wc -l <"$tmp/declared")" -ge 15 ] || { echo "FAIL: only $(wc -l <"$tmp/declared") functions declared"; status=1; }
if ! readelf -d "$lib" | grep -q 'Library soname: \[libiotconn.so.1\]'; then
	echo "FAIL: soname is not libiotconn.so.1"
	status=1
fi

# Prototypes: one normalised line per function, "name|return type|type,type,...", from each header.
normalise() {
	tr '\n' ' ' | sed 's|/\*[^*]*\*\+\([^/*][^*]*\*\+\)*/||g' | tr ';' '\n' |
		grep -E '^ *(extern )?[a-z_ ]+[ *]+iotconn_[a-z0-9_]+ *\(' | grep -v typedef |
		sed -E 's/^ *(extern )?//; s/\bconst\b//g; s/[[:space:]]+/ /g' |
		awk '{
			name = $0; sub(/ *\(.*/, "", name); ret = name; sub(/.*[ *]/, "", name)
			sub(/[A-Za-z0-9_]+$/, "", ret); gsub(/ /, "", ret)
			args = $0; sub(/^[^(]*\(/, "", args); sub(/\) *$/, "", args)
			n = split(args, a, ","); out = ""
			for (i = 1; i <= n; i++) {
				t = a[i]; sub(/^ +/, "", t); sub(/ +$/, "", t)
				if (t != "void") sub(/[A-Za-z0-9_]+$/, "", t)   # drop the parameter name
				gsub(/ /, "", t)
				if (t == "uintptr_t" && i == n) t = "void*"        # cgo sees the trailing user pointer as an integer
				out = out (i > 1 ? "," : "") t
			}
			print name "|" ret "|" out
		}' | sort
}
"$cc" -E -P "$header" | normalise >"$tmp/header.protos"
"$cc" -E -P -I"$(dirname "$header")" "$cgo_header" | normalise >"$tmp/cgo.protos"
# Only functions cgo exports appear in its header (the rest are written in C in the capi preamble).
join -t'|' -j1 "$tmp/header.protos" "$tmp/cgo.protos" -o 1.1,1.2,1.3 >"$tmp/h" || true
join -t'|' -j1 "$tmp/header.protos" "$tmp/cgo.protos" -o 2.1,2.2,2.3 >"$tmp/g" || true
if ! diff -u "$tmp/h" "$tmp/g"; then
	echo "FAIL: return or parameter types differ between include/iotconn.h (-) and cgo's prototypes (+)"
	status=1
fi
[ "$(wc -l <"$tmp/g")" -ge 15 ] || { echo "FAIL: only $(wc -l <"$tmp/g") cgo prototypes compared"; status=1; }

[ $status -eq 0 ] && echo "PASS abi_symbols: $(wc -l <"$tmp/declared") functions, $(wc -l <"$tmp/g") prototypes compared"
exit $status
