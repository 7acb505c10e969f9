// Command capi is the C ABI of iotconn: built with -buildmode=c-shared it is libiotconn.so, whose interface is
// include/iotconn.h. Files here hold //export wrappers and the conversions between C and Go values only; every
// decision is the engine's (package core).
package main

func main() {}
