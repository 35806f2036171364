module relay/services/persister

go 1.26.0

require relay/pkg v0.0.0

replace relay/pkg => ../../pkg
