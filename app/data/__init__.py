"""The data layer: decoding images, a dataset's layout and scan (the only place that knows how a
folder is laid out), the decoded cache, fastai DataLoaders, download, subsets, skip lists and the
`data` table, and review's edits to a dataset. Imports core only."""
