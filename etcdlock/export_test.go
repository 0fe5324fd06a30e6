package etcdlock

// EmbeddedEndpoints starts the test binary's embedded etcd server (once) and
// returns its client URLs, for the examples.
func EmbeddedEndpoints() []string {
	if err := startShared(); err != nil {
		panic(err)
	}
	return []string{shared.member.client}
}
