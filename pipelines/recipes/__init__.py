"""Dataset recipes: each turns one kind of input into a BuildPlan (units, their stage and its options, feature
sets, build info and report) for `pipelines.build.run_build`; nothing callable."""
