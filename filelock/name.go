package filelock

import (
	"crypto/sha256"
	"encoding/hex"
)

// The mapping from keys to file names is part of the on-disk format: every
// process that shares a directory must use the same one, so it must not
// change between versions.
//
// A key whose readable form fits in maxReadable bytes is stored under
// "k-" followed by the key with every byte outside [a-z0-9._:-] written as
// "%xx" (two lower-case hex digits). Every other key is stored under "h-"
// followed by the hex SHA-256 of the key (66 bytes).
//
//   - Safe: the alphabet has no '/' and no NUL, and the tag means a name is
//     never "." or "..", never starts with a dot and is never empty, so
//     "../../etc/passwd" becomes "k-..%2f..%2fetc%2fpasswd", inside the
//     directory.
//   - Injective: "%xx" escaping can be decoded, so two keys with the same
//     readable form are equal; the "k-" and "h-" tags keep the two forms
//     apart; two hashed keys collide only if SHA-256 does.
//   - Portable: names are at most maxReadable bytes (below NAME_MAX, 255,
//     and eCryptfs's 143) and contain no upper-case letters, so keys that
//     differ only in case stay apart on case-insensitive file systems
//     (macOS's default).
const (
	maxReadable    = 128
	readableTag    = "k-"
	hashedTag      = "h-"
	lowerHexDigits = "0123456789abcdef"
)

// safeByte reports whether c is written as itself in a readable name.
func safeByte(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-'
}

// fileName returns the name of the lock file for key.
func fileName(key string) string {
	n := len(readableTag)
	for i := 0; i < len(key) && n <= maxReadable; i++ {
		if safeByte(key[i]) {
			n++
		} else {
			n += 3
		}
	}
	if n > maxReadable {
		sum := sha256.Sum256([]byte(key))
		return hashedTag + hex.EncodeToString(sum[:])
	}
	b := make([]byte, 0, n)
	b = append(b, readableTag...)
	for i := 0; i < len(key); i++ {
		c := key[i]
		if safeByte(c) {
			b = append(b, c)
		} else {
			b = append(b, '%', lowerHexDigits[c>>4], lowerHexDigits[c&15])
		}
	}
	return string(b)
}
