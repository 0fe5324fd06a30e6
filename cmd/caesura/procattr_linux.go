package main

import "syscall"

// childProcAttr makes the kernel send the command SIGTERM if caesura dies
// without forwarding anything (SIGKILL, a crash): its locks are then gone
// (the file and PostgreSQL backends free them with the process) and the
// command must not go on as if it held them. The signal comes when the
// thread that started the command exits, so runLocked keeps that thread
// locked to its goroutine until the command, and the processes it left
// running, have ended. It reaches the command only: the processes the
// command started, and the orphans caesura adopted as a subreaper, are
// reparented to init (or an enclosing subreaper) unsignalled.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
