package main

import "syscall"

// childProcAttr makes the kernel send the command SIGTERM if caesura dies
// without forwarding anything (SIGKILL, a crash): its locks are then gone
// (the file and PostgreSQL backends free them with the process) and the
// command must not go on as if it held them. The signal comes when the
// thread that started the command exits, so runLocked keeps that thread
// locked to its goroutine until the command has ended.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
