package filelock

import (
	"encoding/hex"
	"strings"
	"testing"
)

// decodeName inverts fileName's readable form. ok is false for a hashed
// name or a malformed one.
func decodeName(name string) (key string, ok bool) {
	s, found := strings.CutPrefix(name, readableTag)
	if !found {
		return "", false
	}
	var b []byte
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case safeByte(c):
			b = append(b, c)
		case c == '%' && i+2 < len(s):
			v, err := hex.DecodeString(s[i+1 : i+3])
			if err != nil || strings.ToLower(s[i+1:i+3]) != s[i+1:i+3] {
				return "", false
			}
			b = append(b, v[0])
			i += 2
		default:
			return "", false
		}
	}
	return string(b), true
}

func checkSafeName(t *testing.T, key, name string) {
	t.Helper()
	switch {
	case name == "" || name == "." || name == "..":
		t.Errorf("fileName(%q) = %q: not a usable name", key, name)
	case strings.ContainsAny(name, "/\x00"):
		t.Errorf("fileName(%q) = %q: contains '/' or NUL", key, name)
	case len(name) > maxReadable:
		t.Errorf("fileName(%q) has %d bytes, want at most %d", key, len(name), maxReadable)
	case name[0] == '.':
		t.Errorf("fileName(%q) = %q: hidden", key, name)
	case strings.ToLower(name) != name:
		t.Errorf("fileName(%q) = %q: upper case collides on case-insensitive file systems", key, name)
	}
	if strings.HasPrefix(name, hashedTag) {
		if len(name) != len(hashedTag)+64 {
			t.Errorf("fileName(%q) = %q: malformed hashed name", key, name)
		}
		return
	}
	got, ok := decodeName(name)
	if !ok || got != key {
		t.Errorf("fileName(%q) = %q, which decodes to %q (ok %v), want the key back", key, name, got, ok)
	}
}

func TestFileName(t *testing.T) {
	long := strings.Repeat("a", 200)
	tests := []struct {
		key, want, why string
	}{
		{"file:user:42", "k-file:user:42", "safe bytes stay readable"},
		{"file:../../etc/passwd", "k-file:..%2f..%2fetc%2fpasswd", "no path traversal: '/' is escaped"},
		{".", "k-.", "never the name '.'"},
		{"..", "k-..", "never the name '..'"},
		{"", "k-", "never empty"},
		{"A", "k-%41", "upper case is escaped (case-insensitive file systems)"},
		{"a", "k-a", "lower case is not"},
		{"%41", "k-%2541", "'%' is escaped, so escapes cannot be forged"},
		{"\x00\xff", "k-%00%ff", "NUL and invalid UTF-8"},
		{"é", "k-%c3%a9", "UTF-8 byte by byte"},
		{strings.Repeat("a", maxReadable-2), "k-" + strings.Repeat("a", maxReadable-2), "longest readable name"},
		{strings.Repeat("a", maxReadable-1), "h-", "one byte longer: hashed"},
		{long, "h-", "long keys are hashed"},
	}
	for _, tt := range tests {
		got := fileName(tt.key)
		if tt.want == "h-" {
			if !strings.HasPrefix(got, "h-") {
				t.Errorf("fileName(%q) = %q, want a hashed name (%s)", tt.key, got, tt.why)
			}
		} else if got != tt.want {
			t.Errorf("fileName(%q) = %q, want %q (%s)", tt.key, got, tt.want, tt.why)
		}
		checkSafeName(t, tt.key, got)
	}
	if a, b := fileName(long), fileName(long+"b"); a == b {
		t.Errorf("two long keys map to %q", a)
	}
}

// FuzzFileName checks that the mapping is safe for any key and injective on
// any pair of keys.
func FuzzFileName(f *testing.F) {
	for _, s := range []string{"", ".", "..", "/", "../../etc/passwd", "\x00", "\xff\xfe", "A", "a", "%41", "k-", "h-",
		strings.Repeat("/", 43), strings.Repeat("x", 126), strings.Repeat("x", 127), strings.Repeat("é", 100)} {
		f.Add(s, s+"x")
		f.Add(s, strings.ToUpper(s))
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		na, nb := fileName(a), fileName(b)
		checkSafeName(t, a, na)
		checkSafeName(t, b, nb)
		if (a == b) != (na == nb) {
			t.Errorf("fileName(%q) = %q, fileName(%q) = %q: want equal names exactly for equal keys", a, na, b, nb)
		}
	})
}
