//go:build purego

package caesura

const purego = true
