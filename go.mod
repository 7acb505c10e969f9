module github.com/iotconn/iotconn

go 1.26.8
