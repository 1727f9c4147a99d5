# State written before modules/platform existed (the modules were called from this
# directory): move it to the new addresses instead of replacing the resources.
moved {
  from = module.network
  to   = module.platform.module.network
}

moved {
  from = module.eks
  to   = module.platform.module.eks
}

moved {
  from = module.storage
  to   = module.platform.module.storage
}

moved {
  from = module.database
  to   = module.platform.module.database
}

moved {
  from = module.cache
  to   = module.platform.module.cache
}

moved {
  from = module.ecr
  to   = module.platform.module.ecr
}

moved {
  from = module.iam
  to   = module.platform.module.iam
}
