package reliability

import (
	"errors"
	"testing"
)

// TestFencedStore checks the store the fencing claims rest on: with
// enforcement it refuses a token below the highest it has seen (reads
// included) and counts it; without, it accepts and counts it; a two-key
// write is all or nothing.
func TestFencedStore(t *testing.T) {
	for _, enforce := range []bool{true, false} {
		st := startStore(t, enforce)
		sc, err := dialStore(st.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer sc.c.Close()
		if err := sc.write("k", 5, 1); err != nil {
			t.Fatalf("write with token 5: %v", err)
		}
		if _, err := sc.read("k", 7); err != nil { // a newer holder reads: 7 is now the highest
			t.Fatalf("read with token 7: %v", err)
		}
		err = sc.write("k", 6, 2)
		if got := errors.Is(err, errStale); got != enforce {
			t.Errorf("enforce=%v: write with token 6 after a read with 7: got %v, want stale %v", enforce, err, enforce)
		}
		_, attempted, accepted := st.counts()
		wantAccepted := 0
		if !enforce {
			wantAccepted = 1
		}
		if attempted != 1 || accepted != wantAccepted {
			t.Errorf("enforce=%v: stale writes attempted %d, accepted %d; want 1, %d", enforce, attempted, accepted, wantAccepted)
		}
		if enforce {
			if err := sc.write2("a", 3, 10, "k", 6, 9); !errors.Is(err, errStale) {
				t.Errorf("two-key write with one stale token: got %v, want stale", err)
			}
			if st.value("a") != 0 || st.value("k") != 1 {
				t.Errorf("after a refused two-key write: a=%d k=%d, want 0 and 1 (unchanged)", st.value("a"), st.value("k"))
			}
			if err := sc.write2("a", 3, 10, "k", 7, 9); err != nil {
				t.Errorf("two-key write with current tokens: %v", err)
			}
			if st.value("a") != 10 || st.value("k") != 9 {
				t.Errorf("after a two-key write: a=%d k=%d, want 10 and 9", st.value("a"), st.value("k"))
			}
		}
	}
}
