// Package retrytest gives tests the ranges the built-in policies draw from, so each test states what it checks
// rather than a copy of the formulas.
package retrytest

import (
	"math"
	"time"
)

// DefaultRange is the range JitterDefault draws the delay before retry n from, with the policy's min, max and
// delta: n = 1 in [min, min + 0.8 delta]; later ones in [max(min, x/2), x] over .NET's term x = min + (2^(n-1) - 1)
// x U[0.8 delta, 1.2 delta], capped at U[0.8 max, max]. termLo is the lowest x, the lowest delay .NET itself waits.
func DefaultRange(n int, minB, maxB, delta time.Duration) (lo, hi, termLo time.Duration) {
	if n <= 1 {
		return minB, min(minB+delta*8/10, maxB), minB
	}
	termLo, hi = Term(n, minB, maxB, delta*8/10), Term(n, minB, maxB, delta*12/10)
	termLo = min(termLo, max(minB, maxB*8/10))
	return max(minB, termLo/2), hi, termLo
}

// Term is min(min + (2^(n-1) - 1) x d, max), the exponential term of the .NET formula for retry n.
func Term(n int, minB, maxB, d time.Duration) time.Duration {
	v := float64(minB) + (math.Pow(2, float64(n-1))-1)*float64(d)
	if v >= float64(maxB) {
		return maxB
	}
	return time.Duration(v)
}
