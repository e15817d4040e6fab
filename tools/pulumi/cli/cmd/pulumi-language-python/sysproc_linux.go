package main

import "syscall"

// The program must not outlive its host: a kill -9 of `pulumi up` takes the host down through
// the health check, and the kernel then stops the program instead of leaving it half-run.
func childAttributes() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
