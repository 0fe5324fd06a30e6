package pglock

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Cancellation of a running statement. pgx's default reaction to a context
// that ends mid-query is to close the socket; the server does not notice
// that while its backend waits for an advisory lock, so the wait would stay
// queued (and the lock would be taken later, by a dead session). run instead
// sends the server a cancel request, which aborts the wait at once.
const (
	cancelAttempts = 6                      // cancel requests sent before giving up
	cancelWait     = 500 * time.Millisecond // wait for the statement after each
)

// run executes one statement through do, which must use the context it is
// given. When ctx ends before do returns, run sends cancel requests for the
// statement (a cancel that arrives before the statement starts is ignored by
// the server, hence the retries) and, if the statement still runs, cancels
// do's context, which makes pgx close the connection.
//
// interrupted reports that ctx ended during the statement and a cancel was
// sent: whatever do returned, the connection must not be used again (a late
// cancel request could hit its next statement): the caller discards it.
func run(ctx context.Context, pc *pgconn.PgConn, do func(context.Context) error) (interrupted bool, err error) {
	if ctx.Done() == nil { // never cancelled (context.Background)
		return false, do(ctx)
	}
	qctx, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()
	finished := make(chan struct{})
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		t := time.NewTimer(cancelWait)
		defer t.Stop()
		for range cancelAttempts {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := pc.CancelRequest(cctx)
			cancel()
			if err != nil {
				break
			}
			t.Reset(cancelWait)
			select {
			case <-finished:
				return
			case <-t.C:
			}
		}
		abort()
	})
	err = do(qctx)
	close(finished)
	if !stop() {
		<-fired
		return true, err
	}
	return false, err
}
