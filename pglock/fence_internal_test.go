package pglock

import (
	"strconv"
	"testing"
)

// The statements spell sessionSkip out.
func TestSessionSkipSQL(t *testing.T) {
	if got := strconv.Itoa(sessionSkip); got != sessionSkipSQL {
		t.Fatalf("sessionSkipSQL %q, want %q", sessionSkipSQL, got)
	}
}
