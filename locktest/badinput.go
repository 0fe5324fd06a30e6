package locktest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
)

// badInput yields awkward names. Each yield either succeeds (the name is a
// valid key for the backend) or fails with an error; either way the function
// ends, nothing stays held, and an error has a message.
func (s *suite) badInput(t *testing.T) {
	for _, tc := range []struct {
		name, part string
	}{
		{"NUL bytes", "a\x00b\x00"},
		{"invalid UTF-8", "\xff\xfe\xc3\x28"},
		{"path traversal", "../../etc/passwd"},
		{"slashes and dots", "/./..//x/"},
		{"spaces and newlines", " a b\n\tc "},
		{"1 MiB name", strings.Repeat("k", 1<<20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := s.name(t, tc.part)
			l := s.Lock(name)
			ctx, cancel := context.WithTimeout(context.Background(), s.HandOff+10*time.Second)
			defer cancel()
			err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
				return yield(l, s.Lock(name)) // the same name twice: one lock
			})
			if err != nil {
				if err.Error() == "" {
					t.Fatal("an error without a message")
				}
				if errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("the yield hung until the deadline: %v", err)
				}
				t.Logf("refused: %.200v", err)
				return
			}
			if !s.free(t, l) {
				t.Fatalf("lock for a %s is held after Run", tc.name)
			}
		})
	}
}
