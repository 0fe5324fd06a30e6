package pglock

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Cancellation of a running statement. pgx's default reaction to a context
// that ends mid-query is to close the socket; the server does not notice
// that while its backend waits for an advisory lock, so the wait would stay
// queued (and the lock would be taken later, by a dead session). Closing
// would also end the session, and with it every other lock of the scope
// that shares it. run instead sends the server a cancel request, which
// aborts the wait at once and leaves the session usable.
const (
	cancelAttempts = 6                      // cancel requests sent before giving up
	cancelWait     = 500 * time.Millisecond // wait for the statement after each
	cancelTimeout  = time.Second            // bound on one cancel request's round trip
)

// outcome is what happened to a statement run by run besides its own error.
type outcome struct {
	// interrupted: ctx ended during the statement and cancel requests
	// were sent. Whatever the statement returned, it may have been cut
	// short after it took some of its locks.
	interrupted bool
	// unsettled: a cancel request was not acknowledged by the server (it
	// failed, or its connection did not close within cancelTimeout), so
	// it may still reach the session and cancel its next statement. When
	// every request was acknowledged, the server has signalled the
	// backend before run returned, and a signal that finds the backend
	// idle is ignored: the session is safe for the next statement.
	unsettled bool
	// aborted: the cancel requests did not end the statement in time, and
	// the connection was given a deadline in the past (cleared again if
	// the statement had returned meanwhile).
	aborted bool
}

// run executes one statement through do, which must use the context it is
// given. When ctx ends before do returns, run sends cancel requests for the
// statement (a cancel that arrives before the statement starts is ignored by
// the server, hence the retries) and, if the statement still runs, sets a
// deadline in the past on the connection, which makes pgx fail the
// statement and close the connection. run returns once every cancel request
// it sent has returned.
//
// do's context has ctx's values but not its cancellation: pgx then watches
// no context for the statement (a watch costs allocations on every
// statement, and the scope's context is always cancellable), and the
// deadline does what pgx's own reaction to a cancelled context would.
func run(ctx context.Context, pc *pgconn.PgConn, do func(context.Context) error) (outcome, error) {
	if ctx.Done() == nil { // never cancelled (context.Background)
		return outcome{}, do(ctx)
	}
	finished := make(chan struct{})
	fired := make(chan outcome, 1) // the AfterFunc's outcome, once it returns
	stop := context.AfterFunc(ctx, func() {
		out := outcome{interrupted: true}
		defer func() { fired <- out }()
		t := time.NewTimer(cancelWait)
		defer t.Stop()
		for range cancelAttempts {
			cctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
			err := pc.CancelRequest(cctx)
			// CancelRequest returns nil even when its wait for the
			// server's acknowledgement (the server closing the cancel
			// connection) ran into the deadline.
			acked := err == nil && cctx.Err() == nil
			cancel()
			if !acked {
				out.unsettled = true
			}
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
		out.aborted = true
		_ = pc.Conn().SetDeadline(time.Unix(1, 0))
	})
	err := do(context.WithoutCancel(ctx))
	close(finished)
	if !stop() {
		out := <-fired
		if out.aborted && !pc.IsClosed() {
			// do returned before the deadline hit a read or write.
			_ = pc.Conn().SetDeadline(time.Time{})
		}
		return out, err
	}
	return outcome{}, err
}

// isQueryCanceled reports whether err is PostgreSQL's query_canceled: a
// statement stopped by a cancel request (or statement_timeout).
func isQueryCanceled(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57014"
}
