-- Auto-routing of stable GRE/SWI series to the CMB detection service.
--
-- Loaded by Orthanc ("LuaScripts" in orthanc.json).  When a series has been
-- quiet for "StableAge" seconds, Orthanc calls OnStableSeries; this script looks
-- at the DICOM attributes of one of its instances and sends the series to the
-- CMB service (C-STORE SCU, asynchronous Orthanc job) when it is a candidate
-- for detection:
--
--   * Modality is MR, and
--   * the acquisition is gradient echo: ScanningSequence contains GR and not IR
--     (classic MR), or EchoPulseSequence is GRADIENT (Enhanced MR), and
--   * ImageType is not a phase / field-map / real / imaginary image, not a
--     localizer, not a minIP/MIP projection and not an MPR reformat, and
--   * it is T2*-weighted: ImageType contains SWI, SequenceName contains
--     swi/swan, or EchoTime >= MinEchoTimeMs (T1-weighted short-TE GRE is skipped).
--
-- SeriesDescription is never used on its own: it is free text that sites rename.
-- The CMB service applies its own, stricter selection rules to what it receives.
--
-- Loop protection: results coming back from the service (DICOM SEG, TID 1500
-- SR, secondary-capture overlays) must never be routed to it again.  A series
-- is never routed when
--   * its Modality is not MR (SEG, SR, OT, SC...), or
--   * the AE that sent it to Orthanc (metadata RemoteAET) is the service's
--     AE title, or
--   * its Manufacturer is the one the service writes ("cmb-detect"), or
--   * its ImageType says DERIVED\SECONDARY (a rendered overlay).
--
-- Settings come from the "CmbRouting" section of the Orthanc configuration:
--   Modality       name of the service in "DicomModalities" (default "cmb")
--   AeTitle        the service's AE title (default "CMB_AI")
--   Manufacturer   Manufacturer written by the service (default "cmb-detect")
--   MinEchoTimeMs  shortest TE treated as T2*-weighted (default 10)
--   Enabled        false switches routing off without removing the script

local function settings()
  local all = GetOrthancConfiguration()
  local c = all['CmbRouting'] or {}
  return {
    modality = c['Modality'] or 'cmb',
    aet = c['AeTitle'] or 'CMB_AI',
    manufacturer = c['Manufacturer'] or 'cmb-detect',
    min_te = tonumber(c['MinEchoTimeMs'] or 10),
    enabled = c['Enabled'] ~= false,
  }
end

local CONFIG = settings()

-- Backslash-separated multi-valued strings to an upper-case token set.
local function tokens(value)
  local set = {}
  if value == nil then
    return set
  end
  if type(value) == 'table' then
    value = table.concat(value, '\\')
  end
  for token in string.gmatch(string.upper(tostring(value)), '[^\\]+') do
    set[(token:gsub('^%s+', ''):gsub('%s+$', ''))] = true
  end
  return set
end

local function nth_token(value, n)
  local i = 0
  for token in string.gmatch(string.upper(tostring(value or '')), '[^\\]+') do
    i = i + 1
    if i == n then
      return token
    end
  end
  return nil
end

local function any(set, names)
  for _, name in ipairs(names) do
    if set[name] then
      return true
    end
  end
  return false
end

local NOT_MAGNITUDE = {
  'P', 'PHASE', 'R', 'REAL', 'I', 'IMAGINARY', 'B0', 'FIELD_MAP', 'FM',
  'P_FFE', 'R_FFE', 'I_FFE', 'PHASE_FFE',
}
local EXCLUDED_TYPES = {
  'LOCALIZER', 'SCOUT', 'PHASE MAP', 'FIELD_MAP', 'B0MAP', 'QSM', 'SWI_PHASE',
  'MNIP', 'MINIP', 'MIN IP', 'MINIMUM', 'MIP', 'MAX IP', 'PROJECTION IMAGE',
  'MPR', 'CSA MPR', 'REFORMATTED',
}

-- Returns (route?, reason) for the simplified tags of one instance of a series.
function CmbClassify(tags, remoteAet, geImageKind)
  local modality = string.upper(tags['Modality'] or '')
  if modality ~= 'MR' then
    return false, 'modality ' .. modality .. ' is not MR'
  end
  if remoteAet ~= nil and string.upper(remoteAet) == string.upper(CONFIG.aet) then
    return false, 'sent by ' .. remoteAet .. ' (our own result)'
  end
  if tags['Manufacturer'] == CONFIG.manufacturer then
    return false, 'written by ' .. CONFIG.manufacturer .. ' (our own result)'
  end
  local imageType = tags['ImageType'] or tags['FrameType']
  local types = tokens(imageType)
  if types['DERIVED'] and types['SECONDARY'] then
    return false, 'ImageType DERIVED\\SECONDARY (rendered, not acquired)'
  end
  -- Values 3 and 4 carry the image kind (Siemens: value 3 M/P; Philips: value 4 M/P).
  for n = 3, 4 do
    local kind = nth_token(imageType, n)
    if kind ~= nil and any({ [kind] = true }, NOT_MAGNITUDE) then
      return false, 'ImageType value ' .. n .. ' is ' .. kind .. ' (not a magnitude image)'
    end
  end
  local component = string.upper(tags['ComplexImageComponent'] or 'MAGNITUDE')
  if component ~= 'MAGNITUDE' and component ~= 'MIXED' then
    return false, 'ComplexImageComponent ' .. component
  end
  if geImageKind ~= nil and geImageKind ~= 0 then
    return false, 'GE image kind (0043,102F) is ' .. geImageKind .. ' (not a magnitude image)'
  end
  if any(types, EXCLUDED_TYPES) then
    return false, 'ImageType ' .. tostring(imageType) .. ' (localizer, projection or reformat)'
  end

  local scanning = tokens(tags['ScanningSequence'])
  local pulse = string.upper(tags['EchoPulseSequence'] or '')
  local gradient = scanning['GR'] or pulse == 'GRADIENT' or pulse == 'BOTH'
  if scanning['IR'] then
    return false, 'inversion recovery (T1/FLAIR)'
  end
  if not gradient then
    return false, 'not a gradient-echo acquisition'
  end

  local sequenceName = string.lower(tags['SequenceName'] or '')
  if types['SWI'] or string.find(sequenceName, 'swi') or string.find(sequenceName, 'swan') then
    return true, 'SWI magnitude (ImageType/SequenceName)'
  end
  local te = tonumber(tags['EchoTime'] or '')
  if te == nil then
    return true, 'gradient echo, echo time unknown (Enhanced MR): left to the service'
  end
  if te >= CONFIG.min_te then
    return true, string.format('T2*-weighted gradient echo (TE %.1f ms)', te)
  end
  return false, string.format('gradient echo with short TE %.1f ms (T1/PD-weighted)', te)
end

-- GE writes the image kind (0 magnitude, 1 phase, 2 real, 3 imaginary) in the
-- private tag (0043,102F) and keeps ImageType ORIGINAL\PRIMARY\OTHER for all.
function GeImageKind(instanceId, tags)
  if not string.find(string.upper(tags['Manufacturer'] or ''), 'GE') then
    return nil
  end
  local ok, raw = pcall(RestApiGet, '/instances/' .. instanceId .. '/content/0043-102f')
  if not ok or raw == nil or #raw < 2 then
    return nil
  end
  local value = tonumber(raw)  -- a string when the private dictionary decodes it
  if value == nil then
    value = string.byte(raw, 1) + 256 * string.byte(raw, 2)  -- SS, little endian
  end
  return value
end

function OnStableSeries(seriesId, tags, metadata)
  if not CONFIG.enabled then
    return
  end
  local series = ParseJson(RestApiGet('/series/' .. seriesId))
  local instances = series['Instances']
  if instances == nil or #instances == 0 then
    return
  end
  local first = instances[1]
  local instanceTags = ParseJson(RestApiGet('/instances/' .. first .. '/simplified-tags'))
  local remoteAet = nil
  local ok, value = pcall(RestApiGet, '/instances/' .. first .. '/metadata/RemoteAET')
  if ok then
    remoteAet = value
  end
  local route, reason = CmbClassify(instanceTags, remoteAet, GeImageKind(first, instanceTags))
  local uid = tags['SeriesInstanceUID'] or seriesId
  if not route then
    print('cmb-autoroute: not routing series ' .. uid .. ': ' .. reason)
    return
  end
  print('cmb-autoroute: routing series ' .. uid .. ' (' .. #instances .. ' instances) to '
        .. CONFIG.modality .. ': ' .. reason)
  -- An asynchronous job: a failure (service down) is visible in /jobs and can be
  -- resubmitted with POST /jobs/{id}/resubmit; the service ignores duplicates.
  RestApiPost('/modalities/' .. CONFIG.modality .. '/store',
              DumpJson({ Resources = { seriesId }, Asynchronous = true }, true))
end
