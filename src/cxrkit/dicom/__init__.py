"""The DICOM node: receive studies from a PACS, predict, return DICOM SR (TID 1500) and Secondary
Captures, and keep a durable worklist of everything received."""
