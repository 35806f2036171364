module relay/tools

go 1.26

require relay/pkg v0.0.0

replace relay/pkg => ../pkg
